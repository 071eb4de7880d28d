"""The page's tabs, one module each: a class that lays out the tab's components when built (inside the page's
gr.Blocks) and wires their events when asked. `common` holds what every tab is built from."""
