"""`python -m hf_slug` is `hf-slug`."""

import sys

from .cli import main

sys.exit(main())
