"""vkd_fast.experimental's tests. Importing the package registers ``vkd_experimental`` and the
``misdirect`` / ``repel`` targets for the whole process; these tests register them around each test
only, so the rest of the session sees the product's registries as ``import vkd_fast`` leaves them."""

import pytest

import vkd_fast.experimental as X

X.unregister()  # collecting these tests imported the package


@pytest.fixture(autouse=True)
def _experimental_registered():
    X.register()
    yield
    X.unregister()
