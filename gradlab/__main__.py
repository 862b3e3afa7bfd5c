from gradlab.cli.main import main

main()
