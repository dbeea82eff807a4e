from avatarcli.cli import run

run()
