"""The Ray layer: Ray Train runs the core trainer on many workers, Ray Data streams the images, Ray Tune
runs sweeps (and ``report`` reads them back).

Imports go one way: the core (``cyclegan/``) <- ``runtime`` (starting Ray) <- ``streams`` and ``train``
(a Ray Train run) <- ``trial`` <- ``sweep`` (Ray Tune) <- the CLI; ``report`` reads sweeps back. Nothing
in ``cyclegan/`` outside this package imports Ray or this package, but the CLI on top of both
(tests/test_structure.py checks it).
"""
