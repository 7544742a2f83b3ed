def register(subparsers):
    parser = subparsers.add_parser("correction-data", help="(not available yet)")
    parser.set_defaults(func=lambda args: (_ for _ in ()).throw(NotImplementedError("correction-data is not implemented yet")))
