"""The routes: thin handlers over crud.py and queue.py."""
