"""What every layer of a model computes on one image, which pixels decided it, and the gradients.

    trace = explain(net, x)          # x: (1, 28, W, 1) normalized; one inference-mode forward
    trace.outputs[i]                 # layer i's output for this image: (rows, ...), rows = 2 after Tiles
    trace.saliency                   # (28, W): d(top class's score) / d(input), by our own backward
    view_json(trace, classes)        # what `POST /api/explain` returns (maps as PNG data URLs)
    sheet(trace, image, classes)     # the same as one Pillow picture (`nn explain`)
    grad = backward(net, x, label)   # the backward view: the loss of `label`, back through every layer
    grad.douts[i], grad.grads[i]     # dL/d(layer i's output), dL/d(its weights)
    backward_json(grad, classes)     # `POST /api/backward`; backward_sheet: `nn explain --backward`

  trace.py   the passes: explain (each layer's output, the saliency) and backward (the
             gradients of one label's loss); the tables of the layers they know
  web.py     the views' JSON for `nn serve`: view_json, backward_json, kernel_json
  sheet.py   the same views as one Pillow picture for `nn explain`: sheet, backward_sheet
  atlas.py   what both draw: maps, gradients and kernels as atlases, the diverging palette
"""
