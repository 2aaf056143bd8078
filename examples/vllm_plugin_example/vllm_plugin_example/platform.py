"""The example's platform: what a hardware vendor fills in."""

from vllm.platforms import DeviceCapability, Platform, PlatformEnum


class ExamplePlatform(Platform):
    _enum = PlatformEnum.OOT
    device_name = "example"
    device_type = "cpu"
    dispatch_key = "CPU"

    @classmethod
    def get_device_capability(cls, device_id: int = 0) -> DeviceCapability | None:
        return DeviceCapability(1, 0)

    @classmethod
    def check_and_update_config(cls, config: dict) -> None:
        config.setdefault("block_size", 16)
