from celora_cli.cli.app import main

main()
