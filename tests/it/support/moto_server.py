"""Runs moto's server on 127.0.0.1 and an OS-chosen port for one test.

Prints the port on the first line of stdout, then serves until stdin is
closed (the test ended or died), so no moto process outlives its test.
"""
import sys

from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
