"""Ask the Hub whether it accepts a model card's metadata, before anything is created or uploaded.

The client validates README.md itself inside `create_commit` (POST /api/validate-yaml, hf_api.py
`_validate_yaml`), but only after the repo exists and as a ValueError. Asking first, through the
same endpoint of the configured Hub, lets a refused card stop a release with nothing made, and
lets the message quote the Hub's reason, which names the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub.errors import BadRequestError
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from pipeline.errors import CheckFailed
from pipeline.remote.calls import LIBRARY_NAME, RetryPolicy, call


def _reasons(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return []
    errors = body.get("errors") or []
    reasons = [str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")]
    return reasons or ([str(body["error"])] if body.get("error") else [])


def validate_card(api: HfApi, readme: Path, policy: RetryPolicy, repo: str) -> None:
    """Refuse (exit 1) a README.md whose metadata the Hub's validator rejects, quoting its reason."""
    content = readme.read_text(encoding="utf-8")

    def ask() -> list[str]:
        response = get_session().post(
            f"{api.endpoint.rstrip('/')}/api/validate-yaml",
            json={"content": content, "repoType": "model"},
            headers=build_hf_headers(token=api.token, library_name=LIBRARY_NAME),
        )
        try:
            hf_raise_for_status(response)
        except BadRequestError:
            return _reasons(response.json()) or ["metadata refused without a reason"]
        return []

    reasons = call("validate the card's metadata", ask, policy, repo=repo)
    if reasons:
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        raise CheckFailed(
            f"{readme}: the Hub's metadata validator refused it: {reasons[0]}{more}",
            hint="fix the card's front matter (the recipe's card: section or the template), render it again and commit",
        )
