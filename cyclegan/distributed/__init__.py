"""The Ray layer: Ray Train runs the core trainer on many workers, Ray Data streams the images.

Nothing in ``cyclegan/`` outside this package imports Ray.
"""
