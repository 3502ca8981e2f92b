"""Ray clusters: the registry and the REST clients (Jobs, packages, resources)."""
from trainyard.clusters.ray_client import RayClusterClient, SubmitRejected, package_name_for
from trainyard.clusters.registry import DEFAULT_CLUSTER, ClusterRegistry

__all__ = ["RayClusterClient", "SubmitRejected", "package_name_for", "ClusterRegistry", "DEFAULT_CLUSTER"]
