"""The Ray layer: everything in ``cyclegan`` that imports Ray. Ray Train runs the core trainer on many
workers, Ray Data streams the images, Ray Tune runs sweeps. It imports the core (``cyclegan/core``) and
nothing above it; only the commands (``cyclegan/commands``) import it (tests/project/test_structure.py
checks it)."""
