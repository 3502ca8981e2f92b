"""Built-in model families, one folder each, all with the same shape.

They register like any other family: as `trainyard.workloads` entry points in Trainyard's
pyproject.toml (name -> "module:ATTRIBUTE" of a Workload). Each folder's meta.json holds
what the control plane may know of its workloads (trainyard.families.WorkloadMeta), so the
server never imports a family; tests/unit/test_workloads.py keeps it equal to the code.
A family's workload.py imports torch only inside its functions.
"""
