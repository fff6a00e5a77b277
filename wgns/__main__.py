from wgns.cli import entry

entry()
