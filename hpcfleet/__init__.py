"""hpcfleet: federated experiment orchestration across a consortium's HPC sites."""

__version__ = "0.1.0"
