"""What a job costs: prices per node type, peak FLOP/s per accelerator, and the cost record.

Torch-free (the server imports it). The FLOP counter that runs on the workers is
trainyard.costs.flops, which imports torch inside its functions.
"""
from trainyard.costs.peaks import PEAKS, peak_flops, resolve_accelerator
from trainyard.costs.prices import InstancePrice, NodePrice, PriceTable, load_prices, node_prices
from trainyard.costs.record import Allocation, JobCost, job_cost, sweep_cost

__all__ = ["PEAKS", "peak_flops", "resolve_accelerator", "InstancePrice", "NodePrice", "PriceTable",
           "load_prices", "node_prices", "Allocation", "JobCost", "job_cost", "sweep_cost"]
