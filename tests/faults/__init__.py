"""Fault-injection tests: damaged inputs, broken downloads, full disks, hostile submissions."""
