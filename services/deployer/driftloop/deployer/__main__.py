from driftloop.deployer.main import main

main()
