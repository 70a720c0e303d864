"""A tiny `moving-objects` in the test's own cache (synthetic backgrounds instead of the real clips, which the tests'
empty caches do not hold), for the tests of what reads the set."""

import pytest

from tests.video.files import write_tiny_moving_objects


@pytest.fixture
def tiny_moving_objects():
    write_tiny_moving_objects()
