from purejaxrl.cli import main

main()
