import sys
print("Hello from the sandbox!")
print("python", sys.version.split()[0], "argv", sys.argv)
