"""Tests of the five reference workloads in examples/workloads/."""
