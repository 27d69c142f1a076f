from lo_stream.cli import main

main()
