"""Writes data/rwkv_bench_hellaswag.jsonl: 60 HellaSwag-shaped items, deterministic (no randomness beyond a
seeded generator), so the file can be rebuilt and checked: `python tasks/make_rwkv_bench_hellaswag.py`.

Each item: an activity label, a context of about 100 GPT-NeoX tokens (five or six steps of one everyday
activity, in order) and four endings of about 20 tokens: the next step of the same activity (the label)
and three steps taken from other activities, in a seeded order. The shape is what matters for timing
(HellaSwag: ~100-token contexts, four ~20-token endings); the items are easy for a trained model.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "rwkv_bench_hellaswag.jsonl"
N_ITEMS = 60
SEED = 14

ACTIVITIES = {
    "Baking bread": [
        "A woman pours warm water into a large glass bowl and stirs in a spoonful of dry yeast.",
        "She waits a few minutes until small bubbles rise to the surface of the cloudy water.",
        "Next she adds flour, a pinch of salt and a little olive oil, mixing everything with a wooden spoon.",
        "The dough is turned out onto a floured counter and kneaded firmly with the heels of her hands.",
        "She folds it over again and again until it feels smooth, soft and slightly springy.",
        "The dough goes back into the oiled bowl, covered with a clean towel, to rise near the window.",
        "After an hour it has doubled in size, and she presses it down gently to let the air escape.",
        "She shapes it into a long oval loaf and places it on a baking tray dusted with cornmeal.",
        "With a sharp knife she cuts three shallow slashes across the top of the pale loaf.",
    ],
    "Changing a tire": [
        "A man pulls his car onto the shoulder of the road and switches on the hazard lights.",
        "He opens the trunk and lifts out the spare tire, the jack and a heavy metal wrench.",
        "Kneeling by the flat tire, he loosens each of the lug nuts by half a turn while the wheel is on the ground.",
        "He slides the jack under the frame of the car, next to the wheel, and begins to crank the handle.",
        "Slowly the car rises until the flat tire hangs a few inches above the gravel.",
        "He removes the loosened nuts one by one and drops them into his jacket pocket.",
        "Gripping the tire with both hands, he pulls it straight off the bolts and lays it flat on the ground.",
        "He lifts the spare into place, lining up the holes in the rim with the bolts on the hub.",
        "He threads each nut back on by hand, turning them until they are snug against the wheel.",
    ],
    "Painting a room": [
        "A couple moves the furniture to the middle of the room and covers it with plastic sheets.",
        "They lay canvas drop cloths along the floor, pressing the edges flat against the walls.",
        "Using blue tape, the man carefully masks the window frames, the outlets and the edges of the ceiling.",
        "The woman fills a small hole in the wall with spackle and smooths it with a putty knife.",
        "Once it dries, she sands the patch lightly until it is level with the rest of the wall.",
        "He opens a can of pale green paint and stirs it slowly with a flat wooden stick.",
        "She pours some of the paint into a metal tray and rolls a fluffy roller back and forth in it.",
        "Starting near a corner, she rolls the paint onto the wall in long overlapping strokes.",
        "Meanwhile he uses an angled brush to cut in along the taped edges around the window.",
    ],
    "Washing a dog": [
        "A boy fills the bathtub with a few inches of lukewarm water and tests it with his wrist.",
        "He lifts a wriggling brown dog into the tub while his sister holds a towel nearby.",
        "Using a plastic cup, he pours water slowly over the dog's back, avoiding its eyes and ears.",
        "The dog shakes suddenly, spraying water all over the tiles and the laughing children.",
        "He squeezes a line of dog shampoo along its spine and works it into a thick lather.",
        "His sister scrubs the dog's legs and paws with her fingers while it stands patiently.",
        "They rinse the shampoo out carefully, cup after cup, until the water runs clear.",
        "The boy drains the tub and wraps the dripping dog in a large striped towel.",
        "He rubs its fur briskly while the dog tries to lick his face.",
    ],
    "Planting a tree": [
        "A gardener chooses a sunny spot in the yard and marks a wide circle on the grass with a stick.",
        "She digs a hole twice as wide as the root ball of the young maple but no deeper than it.",
        "The loose soil is piled neatly on a tarp beside the hole so that none of it is lost.",
        "She loosens the roots gently with her fingers, since they had been circling inside the pot.",
        "Then she lowers the tree into the hole and checks that it stands straight from two sides.",
        "She shovels the soil back in around the roots, pressing it down firmly to remove air pockets.",
        "Using the last of the soil, she builds a low ring around the trunk to hold water.",
        "She waters the tree slowly with a hose until the ring fills and soaks into the ground.",
        "Finally she spreads a thick layer of wood chip mulch around the base, keeping it off the bark.",
    ],
    "Making pancakes": [
        "A father cracks two eggs into a mixing bowl and whisks them with a cup of milk.",
        "He adds flour, sugar, baking powder and a pinch of salt, stirring until just combined.",
        "A few small lumps remain in the batter, and he leaves them there on purpose.",
        "He sets a wide frying pan over medium heat and melts a small piece of butter in it.",
        "When the butter stops foaming, he ladles a round pool of batter into the center of the pan.",
        "Bubbles begin to appear across the surface of the pancake and slowly pop.",
        "He slides a thin spatula underneath and flips the pancake over in one quick motion.",
        "The second side cooks for another minute until it turns a light golden brown.",
        "He stacks the finished pancakes on a warm plate and covers them with a clean cloth.",
    ],
    "Tuning a guitar": [
        "A young musician sits on the edge of the bed with an acoustic guitar resting on her knee.",
        "She clips a small electronic tuner onto the headstock and switches it on.",
        "She plucks the thickest string and watches the needle on the tuner's little screen.",
        "The note is slightly flat, so she turns the tuning peg slowly away from her.",
        "When the needle settles in the middle and the light turns green, she moves to the next string.",
        "She repeats the process on each string, plucking, listening and adjusting the pegs.",
        "The thinnest string is sharp, and she loosens it a little until the tuner shows the right note.",
        "She strums a simple chord and listens closely to how the strings sound together.",
        "One string still sounds a bit off, so she checks it again with the tuner.",
    ],
    "Cleaning a window": [
        "A man fills a bucket with warm water and adds a small squirt of dish soap.",
        "He dips a soft sponge into the bucket and squeezes out most of the water.",
        "Starting at the top of the window, he scrubs the glass in wide circular motions.",
        "Dirty streaks of soapy water run down the pane and collect on the wooden sill.",
        "He picks up a rubber squeegee and wipes the blade clean with a dry cloth.",
        "Holding it at an angle, he pulls the squeegee across the top of the glass in one smooth stroke.",
        "After each stroke he wipes the rubber blade on the cloth so it does not leave marks.",
        "He works his way down the window, overlapping each pass by a couple of inches.",
        "With a corner of the cloth he dries the edges where the squeegee could not reach.",
    ],
}

ENDINGS = {
    "Baking bread": [
        "She slides the tray into the hot oven and sets a timer for thirty-five minutes.",
        "When the loaf sounds hollow as she taps its bottom, she sets it on a rack to cool.",
    ],
    "Changing a tire": [
        "He lowers the jack until the tire touches the road and then tightens the nuts in a star pattern.",
        "He puts the flat tire and the tools back in the trunk and closes the lid firmly.",
    ],
    "Painting a room": [
        "When the first coat is dry, they apply a second coat to cover the patches that still show.",
        "They peel off the blue tape slowly while the paint is still slightly wet.",
    ],
    "Washing a dog": [
        "The dog runs out of the bathroom and rolls happily on the living room carpet.",
        "He brushes the damp fur until it is smooth and gives the dog a small treat.",
    ],
    "Planting a tree": [
        "She ties the thin trunk loosely to a wooden stake so that the wind will not bend it.",
        "Every few days for the next month, she comes back to water the young tree deeply.",
    ],
    "Making pancakes": [
        "He serves the pancakes with sliced strawberries and a drizzle of warm maple syrup.",
        "The children pour syrup over their stacks and start eating before he sits down.",
    ],
    "Tuning a guitar": [
        "Satisfied with the sound, she unclips the tuner and begins to play her favorite song.",
        "She strums the chord once more, smiles, and starts practicing the song for her lesson.",
    ],
    "Cleaning a window": [
        "He steps back and checks the glass from an angle to look for any remaining streaks.",
        "He empties the bucket into the sink and hangs the cloth outside to dry.",
    ],
}


def make_items(n: int = N_ITEMS, seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    names = sorted(ACTIVITIES)
    items = []
    for i in range(n):
        name = names[i % len(names)]
        steps = ACTIVITIES[name]
        count = rng.randint(5, 6)
        first = rng.randint(0, len(steps) - count)
        context = " ".join(steps[first:first + count])
        right = rng.choice(ENDINGS[name])
        others = [o for o in names if o != name]
        wrong = [rng.choice(ENDINGS[o]) for o in rng.sample(others, 3)]
        label = rng.randrange(4)
        endings = wrong[:label] + [right] + wrong[label:]
        items.append({"id": f"hs-{i:03d}", "activity_label": name, "ctx": context, "endings": endings,
                      "label": label})
    return items


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        for item in make_items():
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
