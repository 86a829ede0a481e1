"""Tests of cyclegan/distributed/: Ray Train, Ray Data, Tune sweeps, and clusters of Ray nodes on this machine."""
