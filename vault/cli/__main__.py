import sys

from vault.cli import app

sys.exit(app())
