"""Tests of the project as a whole: the package's layering and ruff, and the lock against the environment."""
