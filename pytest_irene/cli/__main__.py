from pytest_irene.cli import main
import sys
sys.exit(main())
