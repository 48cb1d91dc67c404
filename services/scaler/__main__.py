import sys

from services.cli import main

sys.exit(main(["scaler", *sys.argv[1:]]))
