"""The Bluefors log folder: what its files say (``formats``), where their times are (``localtime``),
how far each has been read (``follower``), and the acquisition that turns new lines into samples
(``acquisition``). No instrument is spoken to: the Bluefors control software writes the files on
its Windows PC and the Pi reads them through a CIFS mount (docs/operations.md)."""
