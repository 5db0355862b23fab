"""The readback tests need torch (the emulator's simulated device); their fixtures (``sim_cc``, ``sim_off``,
``gate``) are shared with other folders in tests/conftest.py."""

import pytest

pytest.importorskip("torch")
