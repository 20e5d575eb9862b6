from driftloop.trainer.main import main

main()
