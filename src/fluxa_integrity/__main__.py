from .cli.main import app

if __name__ == "__main__":  # spawned check workers import this module too
    app()
