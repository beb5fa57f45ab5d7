from srcnn_theano.cli import main
from srcnn_theano.commandline import exit_process

exit_process(main())
