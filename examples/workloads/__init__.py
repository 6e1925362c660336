"""The five reference workloads, one small complete app each (see docs/workloads.md)."""
