"""pytest fixtures for Tests/data (defined in data_helpers)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from data_helpers import image_folder  # noqa: E402,F401
