from hpcfleet.cli import main

main()
