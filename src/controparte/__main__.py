from controparte.cli import main

main()
