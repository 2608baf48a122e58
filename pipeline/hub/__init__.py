"""An embedded, Hub-compatible HTTP server for offline tests, demos and release rehearsals."""

from pipeline.hub.faults import FaultPlan
from pipeline.hub.server import HubServer, serve
from pipeline.hub.stats import ServerStats

__all__ = ["FaultPlan", "HubServer", "ServerStats", "serve"]
