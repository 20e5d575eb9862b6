from driftloop.evaluator.main import main

main()
