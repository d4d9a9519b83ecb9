"""The Wireshark dissector shipped with the package: TCP-ENO (RFC 8547, TCP option kind 69)
and the tcpcrypt byte stream (RFC 8548: Init1/Init2, encryption frames), in Lua.

``tcpstack wireshark-plugin`` prints the plugin's path (for ``tshark -X lua_script:PATH``);
``tcpstack wireshark-plugin --install`` copies it into Wireshark's personal Lua plugins
folder, the one ``tshark -G folders`` calls "Personal Lua Plugins" (Wireshark 2.5 and later
on Linux and macOS: ``~/.local/lib/wireshark/plugins``), where Wireshark and tshark load it
at start-up.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PLUGIN_NAME = "tcpeno_tcpcrypt.lua"
DEFAULT_PERSONAL_LUA_PLUGINS = Path("~/.local/lib/wireshark/plugins")


def plugin_path() -> Path:
    """The Lua file inside the installed package."""
    return Path(__file__).resolve().with_name(PLUGIN_NAME)


def personal_plugins_dir(tshark: str | None = None) -> Path:
    """Wireshark's "Personal Lua Plugins" folder: asked of ``tshark -G folders`` when tshark
    is installed, else the folder Wireshark 2.5 and later use on Linux and macOS."""
    exe = tshark or shutil.which("tshark")
    if exe:
        try:
            out = subprocess.run([exe, "-G", "folders"], capture_output=True, text=True,
                                 timeout=30, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        for line in out.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == "Personal Lua Plugins" and value.strip():
                return Path(value.strip())
    return DEFAULT_PERSONAL_LUA_PLUGINS.expanduser()


def install(directory: str | os.PathLike[str] | None = None) -> Path:
    """Copy the plugin into ``directory`` (default: :func:`personal_plugins_dir`), creating
    it; return the installed file's path.  Raises OSError when it cannot be written."""
    dest_dir = Path(directory).expanduser() if directory is not None else personal_plugins_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / PLUGIN_NAME
    shutil.copyfile(plugin_path(), dest)
    return dest


__all__ = ["PLUGIN_NAME", "plugin_path", "personal_plugins_dir", "install"]
