from driftloop.gateway.main import main

main()
