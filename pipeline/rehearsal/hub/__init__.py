"""An embedded, Hub-compatible HTTP server for offline tests, demos and release rehearsals."""

from pipeline.rehearsal.hub.faults import FaultPlan
from pipeline.rehearsal.hub.server import HubServer, serve
from pipeline.rehearsal.hub.stats import ServerStats

__all__ = ["FaultPlan", "HubServer", "ServerStats", "serve"]
