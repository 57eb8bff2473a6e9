import sys

from deputy_agent_runtime.worker import main

if __name__ == "__main__":
    sys.exit(main())
