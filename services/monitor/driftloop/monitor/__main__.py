from driftloop.monitor.main import main

main()
