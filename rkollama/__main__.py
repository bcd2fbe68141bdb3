from rkollama.cli import main

main()
