"""Settings of the benchmark's web server: the project's, plus the naive statistics URLs."""

from project.settings import *  # noqa: F403

ROOT_URLCONF = "bench.naive_web"
