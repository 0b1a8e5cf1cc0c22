import sys

from rag_pgstore.cli.app import main

sys.exit(main())
