"""Mappings of the recipe's `benchmarks:` section: an unknown key is refused with the valid ones listed."""

from __future__ import annotations

from pipeline.recipe.fields import Section


class ListingSection(Section):
    """A `Section` whose unknown-key error lists every key the mapping accepts."""

    def __init__(self, data: object, where: str, *, root: str = "benchmarks") -> None:
        super().__init__(data, where, root=root)

    def finish(self) -> None:
        try:
            super().finish()
        except ValueError as exc:
            raise ValueError(f"{exc}; valid keys: {', '.join(sorted(self.known))}") from None
