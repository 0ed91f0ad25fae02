from vhsup.cli import main

main()
