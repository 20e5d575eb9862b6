from driftloop.cli.main import main

main()
