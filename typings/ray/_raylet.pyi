class Config:
    # Ray's Cython config singleton: initialize("") loads the defaults plus RAY_* overrides.
    @staticmethod
    def initialize(config_list: str) -> None: ...
