import sys

from srcnn_theano.cli import main

sys.exit(main())
