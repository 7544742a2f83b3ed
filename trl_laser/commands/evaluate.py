def register(subparsers):
    parser = subparsers.add_parser("evaluate", help="(not available yet)")
    parser.set_defaults(func=lambda args: (_ for _ in ()).throw(NotImplementedError("evaluate is not implemented yet")))
