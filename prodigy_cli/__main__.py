from prodigy_cli.main import entry

entry()
